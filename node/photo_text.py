"""The operator page's strings for house photos, Bahasa Indonesia and English; merged into
the catalogue of node/web_text.py."""

from __future__ import annotations

from simpul.sync.photo_image import MAX_UPLOAD

_MB = MAX_UPLOAD // (1024 * 1024)

PHOTO_CATALOGUE: dict[str, tuple[str, str]] = {
    "photo.title": ("Foto rumah", "House photos"),
    "photo.none": ("Belum ada foto.", "No photos yet."),
    "photo.kind": ("Jenis foto", "Kind of photo"),
    "photo.kind.depan": ("Depan rumah", "House front"),
    "photo.kind.dalam": ("Dalam rumah", "Inside the house"),
    "photo.kind.lainnya": ("Lainnya", "Other"),
    "photo.file": ("Ambil foto atau pilih berkas", "Take a photo or choose a file"),
    "photo.add": ("Tambah foto", "Add photo"),
    "photo.remove": ("Hapus foto", "Remove photo"),
    "photo.taken": ("Diambil", "Taken"),
    "photo.by": ("Ditambahkan oleh", "Added by"),
    "photo.open": ("Buka ukuran penuh", "Open full size"),
    "photo.waiting_thumb": (
        "Foto ini belum diterima dari perangkat lain.",
        "This photo has not arrived from another device yet.",
    ),
    "photo.waiting_full": (
        "Ukuran penuh belum diterima; menyusul setelah data keluarga.",
        "The full size has not arrived yet; it follows after the records.",
    ),
    "photo.pending": (
        "{count} berkas foto masih ditunggu dari perangkat lain.",
        "{count} photo files are still to come from other devices.",
    ),
    "photo.back": (
        "Kembali ke halaman keluarga lalu coba lagi.",
        "Go back to the household page and try again.",
    ),
    "photo.too_large": (
        f"Berkas foto terlalu besar (lebih dari {_MB} MB). Tidak ada yang disimpan. Ambil "
        "ulang foto dengan ukuran lebih kecil.",
        f"The photo file is too large (over {_MB} MB). Nothing was saved. Take the photo "
        "again at a smaller size.",
    ),
    "photo.not_image": (
        "Berkas ini bukan foto (JPEG, PNG atau WebP). Tidak ada yang disimpan.",
        "This file is not a photo (JPEG, PNG or WebP). Nothing was saved.",
    ),
    "photo.truncated": (
        "Berkas foto rusak atau terpotong. Tidak ada yang disimpan. Ambil ulang fotonya.",
        "The photo file is damaged or cut short. Nothing was saved. Take the photo again.",
    ),
    "photo.too_many_pixels": (
        "Gambar ini terlalu besar ukuran pikselnya. Tidak ada yang disimpan.",
        "This image has too many pixels. Nothing was saved.",
    ),
    "photo.kind_missing": (
        "Pilih jenis foto (depan, dalam atau lainnya). Tidak ada yang disimpan.",
        "Choose the kind of photo (front, inside or other). Nothing was saved.",
    ),
    "photo.no_file": (
        "Belum ada foto yang dipilih. Tidak ada yang disimpan.",
        "No photo was chosen. Nothing was saved.",
    ),
    "photo.not_found": (
        "Foto ini tidak ada pada keluarga ini.",
        "This household has no such photo.",
    ),
}
