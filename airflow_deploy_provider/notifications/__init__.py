"""Deployment notifications."""
