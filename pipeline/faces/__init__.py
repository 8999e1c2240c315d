"""Haar face detection, eye landmarks, alignment, the align stage runner and landmark evaluation."""
