"""Serving building blocks shared by the server stages."""
