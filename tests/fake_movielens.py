"""MovieLens files in RecBole's atomic format, generated: the tests never see real rows.

Ratings come from a small known model (a user bias, an item bias and whether the user's
favourite genre is among the film's), so the label carries signal a model can learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "War"]
OCCUPATIONS = ["artist", "doctor", "engineer", "student", "writer"]


def write(
    folder: Path, users: int = 50, items: int = 80, ratings: int = 2000, seed: int = 0
) -> Path:
    """ml-100k.inter, .user and .item under ``folder``; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    favourite = rng.integers(0, len(GENRES), users)
    user_bias = rng.normal(0, 0.8, users)
    film_genres = [
        sorted(rng.choice(len(GENRES), rng.integers(1, 4), replace=False)) for _ in range(items)
    ]
    item_bias = rng.normal(0, 0.8, items)
    user_lines = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    for u in range(users):
        user_lines.append(
            f"{u + 1}\t{rng.integers(18, 60)}\t{'MF'[u % 2]}\t"
            f"{OCCUPATIONS[u % len(OCCUPATIONS)]}\t{10000 + u}"
        )
    item_lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for i in range(items):
        names = " ".join(GENRES[g] for g in film_genres[i])
        item_lines.append(f"{i + 1}\tFilm {i + 1}\t{1980 + i % 20}\t{names}")
    inter_lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    u = rng.integers(0, users, ratings)
    i = rng.integers(0, items, ratings)
    likes = np.array([favourite[a] in film_genres[b] for a, b in zip(u, i, strict=True)])
    score = 3 + user_bias[u] + item_bias[i] + 1.2 * likes + rng.normal(0, 0.7, ratings)
    stars = np.clip(np.rint(score), 1, 5).astype(int)
    for k in range(ratings):
        inter_lines.append(f"{u[k] + 1}\t{i[k] + 1}\t{stars[k]}\t{880000000 + k}")
    for name, lines in (("inter", inter_lines), ("user", user_lines), ("item", item_lines)):
        (folder / f"ml-100k.{name}").write_text("\n".join(lines) + "\n")
    return folder
