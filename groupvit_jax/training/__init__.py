"""Training: the loop and the step (train.py), losses, optimizer, sharding, run checkpoints,
start-up config checks and metric writers."""
