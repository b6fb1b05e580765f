// @topiary/criteria-firstorder: placeholder until its issue lands.
export {};
