// @topiary/cofi: placeholder until its issue lands.
export {};
