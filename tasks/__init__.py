"""Tasks (detection, segmentation, face) and the training engine they share."""
