// @topiary/contrastive: placeholder until its issue lands.
export {};
