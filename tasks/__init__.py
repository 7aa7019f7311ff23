"""Tasks (detection, segmentation, face recognition, face detection), the training engine they
share (:mod:`.engine`) and the pipelines that chain them (:mod:`.pipelines`); nothing else lives
here (studies of residual networks are in ``resvision.studies``)."""
