"""Runtimes and search spaces as plugins.

`runtimes()` and `spaces()` return name -> class for the built-in ones and those installed packages
add through the entry-point groups ``hwlat.runtimes`` and ``hwlat.spaces``::

    # pyproject.toml of a plugin package
    [project.entry-points."hwlat.runtimes"]
    myort = "my_package.runtime:MyOrt"

    # my_package/runtime.py
    from hwlat.plugins import runtimes

    class MyOrt(runtimes()["onnxruntime"]):
        name = "myort"

The class's ``name`` is its CLI name: ``hwlat profile ops --runtime myort``, ``hwlat profile device
--runtime myort``, ``hwlat.runtime("myort")``. A runtime subclasses `hwlat.profilers.base.Runtime`, a
space `hwlat.nas.spaces.base.Space`; docs/contributing.md says what each implements.
"""

from __future__ import annotations

from hwlat.nas.spaces import spaces
from hwlat.profilers.runtimes import runtimes

__all__ = ["runtimes", "spaces"]
