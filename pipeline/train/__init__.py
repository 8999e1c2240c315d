"""The one training core: device and precision, seeding, dvclive logging, checkpoints, DDP, the step loop."""
