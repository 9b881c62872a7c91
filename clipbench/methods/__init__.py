"""Methods: how an image and its regions become features (plain CLIP, FALIP, visual prompts).

Each method's config is in ``METHOD_CONFIGS`` (clipbench/config/methods.py); its code is named here and
imported when the method is built, so config checks and ``clipbench-list`` need no torch.
"""

from clipbench.config.methods import METHOD_CONFIGS
from clipbench.methods.base import METHODS, MethodSpec

__all__ = ["METHODS", "MethodSpec"]

IMPLEMENTATIONS = {  # method name -> (module, the class or function that builds it from (cfg, model))
    "clip": ("clip", "build_clip"),
    "falip": ("falip", "FalipMethod"),
    "ensemble": ("ensemble", "EnsembleMethod"),
    "crop": ("visual_prompts", "CropMethod"),
    "blur": ("visual_prompts", "BlurMethod"),
    "red_circle": ("visual_prompts", "RedCircleMethod"),
    "grayscale_circle": ("visual_prompts", "GrayscaleCircleMethod"),
    "blur_circle": ("visual_prompts", "BlurCircleMethod"),
    "shade": ("visual_prompts", "ShadeMethod"),
    "combine": ("visual_prompts", "CombineMethod"),
}
for _name, (_module, _builder) in IMPLEMENTATIONS.items():
    METHODS.register(_name, MethodSpec(_name, METHOD_CONFIGS[_name], METHODS.lazy(f"{__name__}.{_module}", _builder)))
