"""Face-recognition data: :mod:`.alignment` (norm_crop, landmarks), :mod:`.identities` (identity
folders, RecordIO), :mod:`.verification` (.bin and pairs.txt sets), :mod:`.ijb` (IJB-B / IJB-C
meta files and crops) and :mod:`.synthetic` (generated identities)."""

from .alignment import (
    ARCFACE_TEMPLATE,
    SPHEREFACE_96x112,
    align_crop,
    estimate_norm,
    norm_crop,
    read_landmarks,
    resize_square,
    similarity_transform,
    template_for,
    to_tensor,
)
from .identities import FaceFolder, RecordFaceDataset, folder_to_rec, rec_to_folder, train_augment
from .ijb import IJB_TARGETS, IJBImages, IJBMeta, TemplateSubjects, read_ijb_meta
from .synthetic import RenderedFace, SyntheticFaces, render_face, render_face_parts
from .verification import VerificationSet, VerificationSuite, read_bin, read_pairs, write_bin

__all__ = [
    "ARCFACE_TEMPLATE",
    "IJB_TARGETS",
    "FaceFolder",
    "IJBImages",
    "IJBMeta",
    "RecordFaceDataset",
    "RenderedFace",
    "SPHEREFACE_96x112",
    "SyntheticFaces",
    "TemplateSubjects",
    "VerificationSet",
    "VerificationSuite",
    "align_crop",
    "estimate_norm",
    "folder_to_rec",
    "norm_crop",
    "read_bin",
    "read_ijb_meta",
    "read_landmarks",
    "read_pairs",
    "rec_to_folder",
    "render_face",
    "render_face_parts",
    "resize_square",
    "similarity_transform",
    "template_for",
    "to_tensor",
    "train_augment",
    "write_bin",
]
