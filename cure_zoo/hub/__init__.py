"""Hugging Face Hub: weight resolution and verification."""
