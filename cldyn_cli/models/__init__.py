"""Networks: the base fusion network (VFN) and the semantic compensation (RSC)."""
