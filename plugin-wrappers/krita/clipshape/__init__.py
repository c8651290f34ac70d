"""CLIPShape for Krita: a docker (Settings › Dockers › CLIPShape) and an extension
(Tools › Scripts › Apply Saved CLIPShape Edit…). The work is done by the shared modules
clipshape_logic / clipshape_ctypes (the same files as the GIMP plug-in's) and libclipshape.so."""

from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita

from .docker import ClipShapeDocker
from .extension import ClipShapeExtension

DOCKER_ID = "clipshape_docker"

_app = Krita.instance()
extension = ClipShapeExtension(_app)
_app.addExtension(extension)
_app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight,
                                            ClipShapeDocker))
