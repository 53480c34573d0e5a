"""crossent's native CPU kernels: C loops vectorized for AVX-512, AVX2 or baseline x86-64.

The dispatcher (``crossent._dispatch``) sends a call here when the kernels load and support it
(contiguous rows along the last dim, float32/bfloat16/float16); ``impl="native"`` forces them and
``impl="torch"`` the PyTorch path. ``crossent env`` says which level runs, or why none does.
"""

from crossent.native._library import Library, library, load, quiet_unavailable_reason, unavailable_reason

__all__ = ["Library", "library", "load", "quiet_unavailable_reason", "unavailable_reason"]
