"""Where models and data come from: torchvision, user code, ONNX files; sklearn, folders, arrays."""
