// @topiary/criteria-magnitude: placeholder until its issue lands.
export {};
