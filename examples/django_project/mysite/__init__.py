"""An example Django project serving badgr's OpenAI-compatible endpoint at ``/v1/``."""
