"""Studies: experiments about residual networks themselves, not tasks with a model to ship.

:mod:`.residual` measures what the residual connection does (He et al. 2015): the degradation
of plain nets with depth and the gradient norms block by block (``resvision depth``). A study
may use the tasks' engine and the lower layers; only ``tools/`` imports a study.
"""
