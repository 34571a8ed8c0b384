"""The model pool: generation backends behind one interface, the pool config, and the sampler
that gives every instruction K distinct models."""
