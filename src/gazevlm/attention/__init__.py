"""Attention-vs-gaze analysis: metrics (saliency), extraction from the model (extract), the stage's
outputs (outputs), overlays (render), figures and the stage entry point (stage.run)."""
