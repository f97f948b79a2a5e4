"""Turning a Diagnosis into text for people and JSON for machines."""
