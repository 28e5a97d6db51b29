"""Deployment: writing a trained checkpoint as the files users deploy with, and reading them back.

  outputs    where an export may write (never over an input, never over a file without --overwrite) and
             writing through a temporary name, so a failed export leaves nothing half-written
"""
