//! squashfs encoder (written by another engineer)
