"""Kubernetes platform: Deployments per role, Services per track, and a traffic router."""
