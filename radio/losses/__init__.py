"""Distillation losses and teacher-feature normalisers (docs/losses.md).

Modules (import from them directly; this package imports nothing, so the torch-free ``names`` can be
used by the teacher resolution (``radio/run/teachers.py``) without loading torch):

- ``names``: loss types, modes, summary loss types, normalisers; ``resolve_mode`` and defaults.
- ``functional``: the loss definitions on row vectors (KL, CE, L1, L2/MSE, FD, CS, BALANCED).
- ``spatial``: grid matching of student and teacher feature maps.
- ``summary``: summary-vector losses (cosine, angle, ce, tangent_sphere) with their running state.
- ``criterion``: ``TeacherCriterion``, one teacher's loss in its resolved mode.
- ``aggregate``: ``aggregate_teacher_losses`` (Σ λ_i/N · L_i) and ``label_cross_entropy`` (the label term of
  classification KD; the engine adds it as (1 − λ̄)·CE).
- ``hadamard``, ``phi_s``, ``online_stats``, ``normalizers``: PHI-S and the other feature normalisers,
  ``build_feature_normalizer``.
"""
