"""Hugging Face Hub: model cards, claims, publishing (push) and verification of published models."""
