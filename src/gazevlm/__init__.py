"""gazevlm: gaze-regularised vision-language models on egocentric video."""

from gazevlm import numerics as _numerics

__version__ = "0.1.0"

# before anything imports torch: the same kernels, hence the same bytes, on every machine (gazevlm.numerics)
_numerics.pin()


def load_model(path, task=None, device="cpu", weights_dir=None):
    """A trained model (an export of `gazevlm export`, or a pipeline's models/<run>/seed<N>/<task>) with the
    pipeline's checks, in eval mode: a gazevlm.trained.TrainedModel (.model, .tokenizer, .source).
    Imported on first use, so that `import gazevlm` stays light (no torch)."""
    from gazevlm.trained import load_model as load

    return load(path, task=task, device=device, weights_dir=weights_dir)
