"""Using a trained model: the bundle, predictions on raw recordings, and export to StableHLO and ONNX.

predictor = harjax.serving.Predictor.load("bundle/")
result = predictor.predict(window)            # window [T, C] raw sensor values at the bundle's rate
"""

from harjax.serving.bundle import Bundle, BundleError
from harjax.serving.predictor import InputError, Prediction, Predictions, Predictor

__all__ = ["Bundle", "BundleError", "InputError", "Prediction", "Predictions", "Predictor"]
