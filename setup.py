"""Packaging for resvision.

The repository root holds one folder per subpackage (``backbones/``, ``heads/``, ``tasks/``,
``studies/``, ``datasets/``, ``tools/``); each is installed under the single import namespace
``resvision`` (``backbones/`` -> ``resvision.backbones``) through ``package_dir``. ``resvision``
itself is an implicit namespace package, so nothing else is installed at the top level: no
``datasets`` that would shadow Hugging Face's, no ``tools`` or ``tasks``.
"""

from pathlib import Path

from setuptools import find_packages, setup

VERSION = "0.1.0"
SUBPACKAGES = ("backbones", "heads", "tasks", "studies", "datasets", "tools")

packages: list[str] = []
package_dir: dict[str, str] = {}
for folder in SUBPACKAGES:
    package_dir[f"resvision.{folder}"] = folder
    packages.append(f"resvision.{folder}")
    packages += [f"resvision.{folder}.{sub}" for sub in find_packages(where=folder)]

# Lower bounds are the oldest releases with the APIs used here; no upper caps.
INSTALL_REQUIRES = [
    "torch>=2.1",  # torch.compile, weights_only loading, bf16 autocast on CPU
    "torchvision>=0.16",  # detection components, ops.FrozenBatchNorm2d, weights enums
    "timm>=0.9.2",  # ResNet family with output_stride, pretrained tags "arch.tag"
    "segmentation-models-pytorch>=0.6",  # decoder constructors used by heads/segmentation.py
    "pycocotools>=2.0.7",
    "faster-coco-eval>=1.6.5",
    "vernier>=0.5.4",  # the default COCO evaluation backend (pycocotools' numbers, compiled)
    "albumentations>=2.0",  # Compose.set_random_seed, fill/fill_mask
    "opencv-python-headless>=4.8",  # the cv2 build albumentations requires; never opencv-python
    "numpy>=1.24",
    "PyYAML>=6.0",
    "tqdm>=4.64",
    "matplotlib>=3.7",
    "tensorboard>=2.14",
    "safetensors>=0.4",
    "Pillow>=9.5",
    "orjson>=3.9",  # COCO-sized annotation files parse 1.6x faster than with json
    "scipy>=1.10",  # the WIDER FACE evaluation's .mat ground truth
]

EXTRAS = {
    "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
    "face": ["faiss-cpu>=1.10"],  # galleries: IVF-PQ fast scan searched through IDSelectors
    # face galleries on a Milvus server (pymilvus) or in milvus-lite, Milvus in-process
    "milvus": ["pymilvus>=2.5", "milvus-lite>=2.4.10; sys_platform != 'win32'"],
    "demo": ["scikit-image>=0.21"],
}
EXTRAS["dev"] = sorted(
    {"pytest>=7.4", "ruff>=0.5"}
    | {"scikit-learn>=1.3"}  # the tests' reference for the IJB protocol's ROC (roc_curve, auc)
    | set(EXTRAS["export"])
    | set(EXTRAS["face"])
    | set(EXTRAS["demo"])
    | set(EXTRAS["milvus"])  # 30 s to install, its tests 8 s: CI runs them
)

setup(
    name="resvision",
    version=VERSION,
    description=(
        "Downstream vision tasks (detection, segmentation, face embeddings) on residual networks"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["resvision = resvision.tools.cli:run"]},
    license="Apache-2.0",
)
