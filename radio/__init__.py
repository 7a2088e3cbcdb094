"""radio: RADIO-style multi-teacher knowledge distillation for vision backbones."""

__version__ = "0.1.0"
