"""Inference on a user's photo with the trained models (`i2c lookalike`)."""
