"""Networks: the MAISI UNet wrapper with (r, t) conditioning and the iMF u/v heads."""

from neuromf.models.unet import CONDITIONING_MODES, PREDICTION_TYPES, MeanFlowUNet

__all__ = ["MeanFlowUNet", "CONDITIONING_MODES", "PREDICTION_TYPES"]
