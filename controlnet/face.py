"""The face-identity control input (official.md §6.2, IdentityFilter): a [B,512,H/32,W/32] map, zero except
inside each face's box (divided by 32, rounded), where it holds that face's L2-normalised 512-d ArcFace
embedding. The original detects faces and embeds them with InsightFace models that are not part of this
pack; this builds the map from boxes and embeddings computed elsewhere. The identity ControlNet's weights
were never released (face.safetensors was uploaded and withdrawn)."""
import torch

EMBEDDING_WIDTH = 512
COMPRESSION = 32


def face_identity_map(faces, height, width):
    """faces: one list per image of (box (x0, y0, x1, y1) in pixels, embedding [512]) -> [B,512,H/32,W/32]."""
    rows, columns = height // COMPRESSION, width // COMPRESSION
    face_map = torch.zeros(len(faces), EMBEDDING_WIDTH, rows, columns)
    for index, image_faces in enumerate(faces):
        for box, embedding in image_faces:
            embedding = torch.as_tensor(embedding, dtype=torch.float32)
            if embedding.shape != (EMBEDDING_WIDTH,):
                raise ValueError(f"a face embedding must have {EMBEDDING_WIDTH} values; got shape {list(embedding.shape)}")
            x0, y0, x1, y1 = (round(value / COMPRESSION) for value in box)
            face_map[index, :, max(y0, 0):y1, max(x0, 0):x1] = (embedding / embedding.norm()).view(-1, 1, 1)
    return face_map
