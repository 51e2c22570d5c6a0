"""Learning off the decision path: the model, the label join, the trainer, signed snapshots, registry, follower."""
