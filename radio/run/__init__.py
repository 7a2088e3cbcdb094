"""One way to assemble a run: the checked spec (``spec``), its teachers' effective settings (``teachers``),
the built components (``build``) and the results folder (``layout``), shared by training, eval and export."""
