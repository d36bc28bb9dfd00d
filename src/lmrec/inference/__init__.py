"""Inference: a trained run put to use — scoring histories, explanations, re-ranking, titles — shared by the
CLI, the Python API and the service; nothing here imports training."""
