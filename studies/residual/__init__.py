"""What the residual connection does, measured: ``resvision depth gradients|degradation``.

- :mod:`.gradients`: one forward/backward pass; the gradient norm of every block's parameters
  and of every block's input, for a residual net and the same net without shortcuts.
- :mod:`.degradation`: plain and residual CIFAR nets of several depths trained with the same
  recipe and seed on the built-in 32 px set; training-loss curves per depth (He et al. 2015,
  Figure 6).
"""
