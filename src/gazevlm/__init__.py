"""gazevlm: gaze-regularised vision-language models on egocentric video."""
__version__ = "0.1.0"
