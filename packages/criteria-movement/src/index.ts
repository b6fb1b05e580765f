// @topiary/criteria-movement: placeholder until its issue lands.
export {};
