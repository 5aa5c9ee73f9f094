"""Evaluation: feature spaces, FID/KID, nearest neighbours, attacks, the summary and its claims."""
