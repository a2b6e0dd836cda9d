"""Procedural synthetic scenes in the NeRF-Synthetic ("Blender") layout.

See :mod:`nscodec.scenes.procedural`. Typical use::

    from nscodec.scenes import generate_blender_scene
    path = generate_blender_scene("data/nscodec-demo")   # demo scene, 100x100, 40/5/10 views
    # then: BlenderDataParserConfig(data=path) / ns-train <method> blender-data --data path
"""

from nscodec.scenes.procedural import (
    GENERATOR_VERSION,
    PRIMITIVE_KINDS,
    SCENE_RADIUS,
    TEXTURE_KINDS,
    Primitive,
    SceneSpec,
    Texture,
    camera_poses,
    generate_blender_scene,
    generate_corpus,
    look_at_c2w,
    render_views,
)

__all__ = [
    "GENERATOR_VERSION",
    "PRIMITIVE_KINDS",
    "SCENE_RADIUS",
    "TEXTURE_KINDS",
    "Primitive",
    "SceneSpec",
    "Texture",
    "camera_poses",
    "generate_blender_scene",
    "generate_corpus",
    "look_at_c2w",
    "render_views",
]
