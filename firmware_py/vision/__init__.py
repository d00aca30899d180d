"""Vision: detection, tracking, landmarks, alignment and the face embedder."""
