"""Scoring a checkpoint on whole images of one or more centres."""
