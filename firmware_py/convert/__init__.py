"""The model converter (`kaoclock models build`): dlib's ResNet to int8 LiteRT, parity checks. Build-time only."""
