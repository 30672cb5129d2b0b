"""Every string of the operator page, in Bahasa Indonesia (the default) and English, with
Indonesian date formatting and the translation of validation messages.

Templates and handlers ask `Text(lang)` for a key; a key missing from the catalogue is a
bug the tests catch (KeyError), never a silently blank label.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime

from simpul.node.photo_text import PHOTO_CATALOGUE

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"

MONTHS = {
    "id": (
        "Januari", "Februari", "Maret", "April", "Mei", "Juni",
        "Juli", "Agustus", "September", "Oktober", "November", "Desember",
    ),
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
}  # fmt: skip

# key: (Bahasa Indonesia, English)
CATALOGUE: dict[str, tuple[str, str]] = {
    "app": ("Simpul", "Simpul"),
    "nav.home": ("Beranda", "Home"),
    "nav.households": ("Data keluarga", "Households"),
    "nav.proposals": ("Usulan", "Proposals"),
    "nav.conflicts": ("Konflik", "Conflicts"),
    "nav.duplicates": ("Duplikat", "Duplicates"),
    "hh.download": ("Unduh Excel (.xlsx)", "Download Excel (.xlsx)"),
    "nav.admin": ("Admin", "Admin"),
    "nav.logout": ("Keluar", "Log out"),
    "nav.menu": ("Menu utama", "Main menu"),
    "lang.switch": ("English", "Bahasa Indonesia"),
    "lang.label": ("Bahasa", "Language"),
    "skip": ("Langsung ke isi", "Skip to content"),
    "logged_in_as": ("Masuk sebagai", "Logged in as"),
    "role.operator": ("operator", "operator"),
    "role.verifier": ("verifikator", "verifier"),
    "role.admin": ("admin", "admin"),
    "unavailable": ("belum tersedia", "not available yet"),
    # login
    "login.title": ("Masuk", "Log in"),
    "login.username": ("Nama pengguna", "Username"),
    "login.password": ("Kata sandi", "Password"),
    "login.submit": ("Masuk", "Log in"),
    "login.failed": ("Nama pengguna atau kata sandi salah.", "Wrong username or password."),
    "login.locked": (
        "Terlalu banyak percobaan gagal. Coba lagi setelah {minutes} menit.",
        "Too many failed attempts. Try again in {minutes} minutes.",
    ),
    "login.first": (
        "Belum ada akun. Admin membuat akun pertama di terminal komputer ini:",
        "No account yet. The admin makes the first one in a terminal on this computer:",
    ),
    "login.expired": ("Silakan masuk dulu.", "Please log in first."),
    # errors
    "error.csrf": (
        "Formulir kedaluwarsa atau tidak sah. Muat ulang halaman lalu coba lagi.",
        "The form expired or is not valid. Reload the page and try again.",
    ),
    "error.forbidden": (
        "Peran Anda tidak boleh melakukan ini.",
        "Your role may not do this.",
    ),
    "error.not_found": ("Data tidak ditemukan.", "Not found."),
    "error.title": ("Tidak bisa", "Not possible"),
    "error.changed": (
        "Data ini baru saja diubah orang lain. Buka lagi halamannya lalu ulangi.",
        "Someone else just changed this. Open the page again and repeat.",
    ),
    "error.back": ("Kembali ke beranda", "Back to home"),
    "error.out_of_scope": (
        "Wilayah ini di luar cakupan tulis perangkat ini.",
        "This region is outside this device's write scope.",
    ),
    "error.no_page": (
        "Halaman ini tidak ada. Periksa alamatnya, atau pilih menu di atas.",
        "There is no such page. Check the address, or use the menu above.",
    ),
    "error.method": (
        "Alamat ini tidak bisa dibuka dengan cara itu. Kembali lalu gunakan tombol di halaman.",
        "This address cannot be used that way. Go back and use the buttons on the page.",
    ),
    "error.too_large": (
        "Kiriman terlalu besar (lebih dari 1 MB). Tidak ada yang disimpan. Kurangi isinya "
        "lalu coba lagi.",
        "What was sent is too large (over 1 MB). Nothing was saved. Send less and try again.",
    ),
    "error.bad_request": (
        "Permintaan tidak bisa dibaca. Muat ulang halaman lalu coba lagi.",
        "The request could not be read. Reload the page and try again.",
    ),
    "error.unexpected": (
        "Terjadi kesalahan di perangkat ini. Periksa apakah perubahan terakhir sudah "
        "tersimpan sebelum mengulang. Bila terulang, beri tahu admin (simpul doctor).",
        "Something went wrong on this device. Check whether your last change was saved before "
        "repeating it. If it happens again, tell the admin (simpul doctor).",
    ),
    "error.disk_full": (
        "Penyimpanan perangkat ini penuh. Perubahan ini tidak disimpan; data yang sudah ada "
        "tetap aman. Minta admin mengosongkan ruang (simpul doctor menunjukkan sisanya), lalu "
        "kirim lagi.",
        "This device's storage is full. This change was not saved; the data already stored is "
        "safe. Ask the admin to free some space (simpul doctor shows how much is left), then "
        "send again.",
    ),
    # the device clock behind what the node has already seen (decision 0008)
    "clock.behind": (
        "Jam perangkat ini tertinggal: menunjukkan {now}, padahal waktu {floor} sudah pernah "
        "dilihat. Perubahan tidak bisa disimpan sampai tanggal dan jam diatur.",
        "This device's clock is behind: it says {now}, but {floor} has already been seen. "
        "Changes cannot be saved until the date and time are set.",
    ),
    "clock.refused": (
        "Jam perangkat mundur: menunjukkan {now}, padahal waktu {floor} sudah pernah dilihat. "
        "Tidak ada yang disimpan.",
        "The device clock went back: it says {now}, but {floor} has already been seen. "
        "Nothing was saved.",
    ),
    "clock.fix": (
        "Cara memperbaiki: atur tanggal dan jam perangkat (admin: sudo date -u -s "
        "'YYYY-MM-DD HH:MM', atau sambungkan ke internet), lalu kirim formulir lagi. "
        "Perintah simpul doctor menjelaskan masalahnya.",
        "To fix it: set the device's date and time (admin: sudo date -u -s 'YYYY-MM-DD HH:MM', "
        "or connect it to the internet), then send the form again. The command simpul doctor "
        "explains the problem.",
    ),
    "error.fix": (
        "Ada {count} isian yang perlu diperbaiki. Lihat pesan merah di bawah.",
        "{count} fields need fixing. See the red messages below.",
    ),
    # dashboard
    "home.title": ("Beranda", "Home"),
    "home.by_status": ("Keluarga menurut status usulan", "Households by proposal status"),
    "home.by_village": ("Keluarga menurut desa", "Households by village"),
    "home.villages_more": ("{shown} dari {total} desa", "{shown} of {total} villages"),
    "home.total": ("Jumlah keluarga", "Households"),
    "home.peers": ("Komputer lain di jaringan", "Other computers in the network"),
    "home.no_peers": ("Belum ada komputer lain.", "No other computer yet."),
    "home.peer_online": ("tersambung", "online"),
    "home.peer_offline": ("tidak tersambung", "offline"),
    "home.last_sync": ("sinkron terakhir", "last sync"),
    "home.never": ("belum pernah", "never"),
    "home.hub": ("Terkirim ke pusat (hub)", "Delivered to the district hub"),
    "home.usb": ("Drive USB", "USB drive"),
    "home.uplink": ("Kuota internet (uplink)", "Internet quota (uplink)"),
    "home.conflicts": ("Konflik menunggu", "Conflicts waiting"),
    "home.node": ("Perangkat ini", "This device"),
    "home.network": ("Jaringan", "Network"),
    "home.no_network": (
        "belum bergabung ke jaringan (sinkron LAN mati)",
        "not in a network yet (LAN sync off)",
    ),
    "home.peer_state.synced": ("tersinkron", "in sync"),
    "home.peer_state.failed": ("sinkron gagal", "sync failed"),
    "home.peer_state.refused": ("ada data yang ditolak", "data refused"),
    "home.peer_state.discovered": ("ditemukan, belum sinkron", "found, not synced yet"),
    "home.peer_state.added": ("ditambahkan, belum dihubungi", "added, not contacted yet"),
    "home.peer_state.foreign": (
        "jaringan lain (tidak disinkronkan)",
        "another network (not synced)",
    ),
    "home.peer_refuses": (
        "{name} menolak {count} data: {reason}",
        "{name} refuses {count} entries: {reason}",
    ),
    "home.we_refuse": (
        "Perangkat ini menolak {count} data dari {name}: {reason}",
        "This device refuses {count} entries from {name}: {reason}",
    ),
    "home.refused_title": (
        "Data ditolak — tidak sampai ke semua perangkat",
        "Refused data — not on every device",
    ),
    "home.refused_line": (
        "{count} perubahan dari perangkat {origin} ditolak: {reason}",
        "{count} changes from device {origin} refused: {reason}",
    ),
    "home.refused_fix": (
        "Perubahan ini disimpan tetapi tidak diterapkan. Jalankan 'simpul doctor' di perangkat "
        "admin untuk langkah perbaikan.",
        "These changes are kept but not applied. Run 'simpul doctor' on the admin's device "
        "for the fix.",
    ),
    "refusal.scope": ("di luar wilayah tugas perangkat itu", "outside that device's region"),
    "refusal.revoked": (
        "ditulis setelah perangkat itu dicabut",
        "written after the device was revoked",
    ),
    "refusal.actor": ("penulis perubahan tidak cocok", "written by another device's identity"),
    "refusal.depends": ("bergantung pada perubahan yang ditolak", "depends on a refused change"),
    "refusal.chain": (
        "rantai data rusak, atau dua perangkat memakai identitas yang sama",
        "broken chain, or two devices share one identity",
    ),
    "refusal.own-feed": (
        "perangkat kembar (salinan kartu SD atau cadangan)",
        "a cloned device (copied SD card or backup)",
    ),
    "refusal.untrusted": ("sertifikat tidak dipercaya", "certificate not trusted"),
    "refusal.gap": ("ada data yang hilang di tengah", "entries missing in between"),
    "home.pending": ("Perubahan menunggu data pendahulu", "Changes waiting for earlier ones"),
    # households
    "hh.title": ("Data keluarga", "Households"),
    "hh.new": ("Tambah keluarga", "Add household"),
    "hh.search": ("Cari NIK, No. KK atau nama", "Search NIK, KK number or name"),
    "hh.search_submit": ("Cari", "Search"),
    "hh.village": ("Desa (kode wilayah)", "Village (region code)"),
    "hh.status": ("Status usulan", "Proposal status"),
    "hh.all": ("Semua", "All"),
    "hh.found": ("{total} keluarga", "{total} households"),
    "hh.none": ("Tidak ada keluarga yang cocok.", "No matching household."),
    "hh.page": ("Halaman {page} dari {pages}", "Page {page} of {pages}"),
    "hh.prev": ("Sebelumnya", "Previous"),
    "hh.next": ("Berikutnya", "Next"),
    "hh.head": ("Kepala keluarga", "Head of household"),
    "hh.members_count": ("Anggota", "Members"),
    "hh.updated": ("Diubah", "Changed"),
    "hh.edit": ("Ubah", "Edit"),
    "hh.saved": ("Tersimpan.", "Saved."),
    "hh.history": ("Riwayat perubahan", "Change history"),
    "hh.history_who": ("Oleh", "By"),
    "hh.history_when": ("Waktu", "When"),
    "hh.history_node": ("Perangkat", "Device"),
    "hh.history_fields": ("Isian", "Fields"),
    "hh.this_node": ("perangkat ini", "this device"),
    "hh.hub": ("Terkirim ke pusat", "Delivered to the hub"),
    "hh.hub_yes": ("sudah terkirim ke pusat", "delivered to the hub"),
    "hh.hub_no": ("belum terkirim ke pusat", "not yet at the hub"),
    "hh.conflict_note": (
        "Ada isian yang diubah bersamaan di dua perangkat.",
        "Some fields were changed at the same time on two devices.",
    ),
    "hh.see_conflicts": ("Selesaikan di halaman Konflik", "Settle them on the Conflicts page"),
    "hh.form_new": ("Keluarga baru", "New household"),
    "hh.form_edit": ("Ubah data keluarga", "Edit household"),
    "hh.section_family": ("Data keluarga", "Household"),
    "hh.section_house": ("Kondisi rumah", "House"),
    "hh.section_members": ("Anggota keluarga", "Members"),
    "hh.member": ("Anggota {n}", "Member {n}"),
    "hh.add_member": ("Tambah anggota", "Add member"),
    "hh.remove_member": ("Hapus anggota ini", "Remove this member"),
    "hh.save": ("Simpan", "Save"),
    "hh.cancel": ("Batal", "Cancel"),
    "hh.choose": ("— pilih —", "— choose —"),
    "hh.member_note": (
        "Anggota yang dicentang 'hapus' dibuang saat disimpan.",
        "Members ticked 'remove' are removed when saved.",
    ),
    "field.kode_wilayah": ("Kode wilayah (10 angka)", "Region code (10 digits)"),
    "field.no_kk": ("No. KK (16 angka)", "Family card number (16 digits)"),
    "field.dusun": ("Dusun", "Hamlet"),
    "field.rt": ("RT", "RT"),
    "field.rw": ("RW", "RW"),
    "field.alamat": ("Alamat", "Address"),
    "field.desil": ("Desil (1-10)", "Decile (1-10)"),
    "field.status_usulan": ("Status usulan", "Proposal status"),
    "field.catatan_usulan": ("Catatan usulan", "Proposal note"),
    "field.program": ("Program bantuan", "Programmes"),
    "field.rumah": ("Rumah", "House"),
    "field.rumah.lantai": ("Lantai", "Floor"),
    "field.rumah.dinding": ("Dinding", "Walls"),
    "field.rumah.atap": ("Atap", "Roof"),
    "field.rumah.sumber_air": ("Sumber air", "Water source"),
    "field.anggota": ("Anggota", "Members"),
    "field.nik": ("NIK (16 angka)", "NIK (16 digits)"),
    "field.nama": ("Nama lengkap", "Full name"),
    "field.tanggal_lahir": ("Tanggal lahir (HH-BB-TTTT)", "Date of birth (DD-MM-YYYY)"),
    "field.jenis_kelamin": ("Jenis kelamin", "Sex"),
    "field.hubungan": ("Hubungan dengan kepala keluarga", "Relation to the head"),
    "field.pekerjaan": ("Pekerjaan", "Occupation"),
    "sex.L": ("Laki-laki", "Male"),
    "sex.P": ("Perempuan", "Female"),
    # proposals
    "status.draft": ("draf", "draft"),
    "status.diusulkan": ("diusulkan", "proposed"),
    "status.diverifikasi": ("diverifikasi", "verified"),
    "status.dikembalikan": ("dikembalikan", "returned"),
    "status.ditolak": ("ditolak", "rejected"),
    "status.disahkan": ("disahkan", "approved"),
    "move.diusulkan": ("Usulkan", "Propose"),
    "move.diverifikasi": ("Verifikasi", "Verify"),
    "move.dikembalikan": ("Kembalikan", "Return"),
    "move.ditolak": ("Tolak", "Reject"),
    "move.disahkan": ("Sahkan", "Approve"),
    "prop.title": ("Usulan", "Proposals"),
    "prop.reason": (
        "Alasan (wajib untuk kembalikan / tolak)",
        "Reason (needed to return / reject)",
    ),
    "prop.need_reason": (
        "Tulis alasannya dulu, lalu tekan lagi.",
        "Write the reason first, then press again.",
    ),
    "prop.none_allowed": (
        "Tidak ada langkah usulan untuk peran Anda pada status ini.",
        "No proposal step for your role at this status.",
    ),
    "prop.note": ("Catatan", "Note"),
    "prop.moved": ("Status usulan sekarang: {status}.", "Proposal status is now: {status}."),
    # conflicts
    "conf.title": ("Konflik", "Conflicts"),
    "conf.none": ("Tidak ada konflik.", "No conflicts."),
    "conf.intro": (
        "Isian berikut diubah bersamaan di dua perangkat. Pilih nilai yang benar "
        "atau tulis nilai perbaikan.",
        "These fields were changed at the same time on two devices. Pick the right value "
        "or type a corrected one.",
    ),
    "conf.value": ("Nilai", "Value"),
    "conf.by": ("oleh {operator} di {node}, {at}", "by {operator} on {node}, {at}"),
    "conf.other": ("Nilai lain:", "Another value:"),
    "conf.choose": ("Pakai pilihan ini", "Use this choice"),
    "conf.resolved": ("Konflik selesai.", "Conflict settled."),
    "conf.only_verifier": (
        "Hanya verifikator atau admin yang dapat menyelesaikan konflik.",
        "Only a verifier or an admin can settle conflicts.",
    ),
    "conf.pick_one": ("Pilih salah satu nilai atau tulis nilai lain.", "Pick a value or type one."),
    # duplicates
    "dup.title": ("Duplikat", "Duplicates"),
    "dup.intro": (
        "Keluarga berikut memakai NIK atau No. KK yang sama, biasanya karena dua tempat "
        "mendaftarkan satu keluarga saat tidak tersambung. Gabungkan bila satu keluarga, "
        "atau tandai keduanya benar bila memang dua keluarga.",
        "These households share a NIK or a No. KK, usually because two places registered "
        "one family while offline. Merge them if they are one family, or mark both as right "
        "if they are two.",
    ),
    "dup.none": ("Tidak ada keluarga ganda.", "No duplicate households."),
    "dup.shared": ("Sama: {what}", "Shared: {what}"),
    "dup.keep_this": ("Gabungkan ke keluarga ini", "Merge into this household"),
    "dup.both": ("Keduanya benar (dua keluarga)", "Both are right (two families)"),
    "dup.only_verifier": (
        "Hanya verifikator atau admin yang dapat menggabungkan.",
        "Only a verifier or an admin can merge.",
    ),
    "dup.merged": ("Keluarga digabungkan.", "Households merged."),
    "dup.kept": ("Ditandai sebagai dua keluarga.", "Marked as two families."),
    "dup.refused": (
        "{what} {value} sudah tercatat di keluarga {label}.",
        "{what} {value} is already recorded in the household {label}.",
    ),
    "dup.open": ("Buka keluarga itu", "Open that household"),
    "dup.here": ("sudah tercatat di keluarga lain", "already recorded in another household"),
    # admin
    "adm.title": ("Admin", "Admin"),
    "adm.devices": ("Perangkat di jaringan", "Devices in the network"),
    "adm.device_name": ("Nama", "Name"),
    "adm.node_id": ("ID perangkat", "Device id"),
    "adm.revoked": ("dicabut", "revoked"),
    "adm.no_network": (
        "Perangkat ini belum punya jaringan. Buat dengan perintah simpul network create "
        "di terminal.",
        "This device has no network yet. Create one with the command simpul network create.",
    ),
    "adm.no_root": (
        "Kunci akar jaringan tidak ada di perangkat ini: menerima dan mencabut perangkat "
        "dilakukan di perangkat admin.",
        "The network root key is not on this device: admitting and revoking happen on "
        "the admin's device.",
    ),
    "adm.waiting": ("Perangkat yang menunggu diterima", "Devices waiting to be admitted"),
    "adm.none_waiting": ("Tidak ada perangkat yang menunggu.", "No device is waiting."),
    "adm.admit": ("Terima perangkat dengan kode", "Admit a device by its code"),
    "adm.code": ("Kode 6 angka di layar perangkat baru", "6-digit code on the new device"),
    "adm.scope": ("Cakupan wilayah (awalan kode)", "Region scope (code prefix)"),
    "adm.passphrase": ("Kata sandi kunci akar", "Root key passphrase"),
    "adm.admit_submit": ("Terima", "Admit"),
    "adm.admitted": ("Perangkat {node} diterima.", "Device {node} admitted."),
    "adm.revoke": ("Cabut", "Revoke"),
    "adm.reason": ("Alasan pencabutan", "Reason"),
    "adm.revoked_done": ("Perangkat {node} dicabut.", "Device {node} revoked."),
    "adm.operators": ("Operator", "Operators"),
    "adm.add_operator": ("Tambah operator", "Add operator"),
    "adm.role": ("Peran", "Role"),
    "adm.operator_added": ("Operator {name} ditambahkan.", "Operator {name} added."),
    "adm.state": ("Keadaan", "State"),
    "adm.active": ("aktif", "active"),
    "adm.disabled": ("dinonaktifkan", "disabled"),
    "adm.disable": ("Nonaktifkan", "Disable"),
    "adm.not_yourself": (
        "Anda tidak dapat menonaktifkan akun Anda sendiri.",
        "You cannot disable your own account.",
    ),
    "adm.enable": ("Aktifkan lagi", "Enable again"),
    "adm.disabled_done": ("Operator {name} dinonaktifkan.", "Operator {name} disabled."),
    "adm.enabled_done": ("Operator {name} aktif lagi.", "Operator {name} enabled again."),
    "adm.new_password": ("Kata sandi baru", "New password"),
    "adm.reset": ("Ganti kata sandi", "Reset password"),
    "adm.reset_done": (
        "Kata sandi {name} diganti.",
        "Password of {name} reset.",
    ),
    "adm.tokens": ("Token API", "API tokens"),
    "adm.token_id": ("ID token", "Token id"),
    "adm.created": ("Dibuat", "Created"),
    "adm.no_tokens": ("Belum ada token API.", "No API tokens."),
    "adm.withdraw": ("Tarik", "Withdraw"),
    "adm.withdrawn": ("Token {id} milik {name} ditarik.", "Token {id} of {name} withdrawn."),
    "adm.usb": ("Drive USB", "USB drive"),
    "adm.usb_path": (
        "Folder drive (mis. /media/simpul/sdb1)",
        "Drive folder (e.g. /media/simpul/sdb1)",
    ),
    "adm.usb_use": ("Gunakan drive ini", "Use this drive"),
    "adm.usb_started": (
        "Drive {drive} dipakai; sinkron berjalan. Tunggu 'selesai, aman dicabut'.",
        "Drive {drive} taken into use; sync is running. Wait for 'done, safe to unplug'.",
    ),
    "adm.usb_off": (
        "Node ini tidak mengawasi drive USB.",
        "This node does not watch for USB drives.",
    ),
    "usb.none": ("Belum pernah sinkron lewat drive USB.", "No USB sync yet."),
    "usb.drive": ("Drive", "Drive"),
    "usb.state": ("Keadaan", "State"),
    "usb.finished": ("Selesai pada", "Finished at"),
    "adm.hub": ("Pusat (hub) dan kuota", "Hub and quota"),
    "adm.hub_note": (
        "Pengaturan alamat pusat dan kuota internet belum tersedia.",
        "Hub address and internet quota settings are not available yet.",
    ),
}

_VALIDATION: list[tuple[re.Pattern[str], tuple[str, str]]] = [
    (re.compile(r"^is required$"), ("wajib diisi", "is required")),
    # an empty text, digits or choice field: the rule it breaks is not the point
    (re.compile(r"^expected .*got ''$"), ("wajib diisi", "is required")),
    (re.compile(r"^must not be empty$"), ("wajib diisi", "must not be empty")),
    (
        re.compile(r"^expected exactly (\d+) digits, got (.*)$"),
        ("harus tepat {0} angka, tertulis {1}", "must be exactly {0} digits, got {1}"),
    ),
    (
        re.compile(r"^expected 1 to 3 digits, got (.*)$"),
        ("harus 1 sampai 3 angka, tertulis {0}", "must be 1 to 3 digits, got {0}"),
    ),
    (
        re.compile(r"^expected one of (.*); got (.*)$"),
        ("pilih salah satu: {0}", "choose one of: {0}"),
    ),
    (
        re.compile(r"^expected a whole number from (\d+) to (\d+).*$"),
        ("harus angka bulat {0} sampai {1}", "must be a whole number from {0} to {1}"),
    ),
    (
        re.compile(r"^expected a date as YYYY-MM-DD.*$"),
        (
            "tulis tanggal seperti 21-03-1988 (hari-bulan-tahun)",
            "write the date like 21-03-1988 (day-month-year)",
        ),
    ),
    (re.compile(r"^(.*) is not a real date$"), ("{0} bukan tanggal yang ada", "{0} is not a date")),
    (re.compile(r"^(.*) is in the future$"), ("{0} belum terjadi", "{0} is in the future")),
    (
        re.compile(r"^must be at most (\d+) characters.*$"),
        ("paling banyak {0} huruf", "at most {0} characters"),
    ),
    (
        re.compile(r"^a household needs at least one member$"),
        ("keluarga perlu paling sedikit satu anggota", "a household needs at least one member"),
    ),
    (
        re.compile(r"^NIK (\d+) is already used by .*$"),
        ("NIK {0} sudah dipakai anggota lain di keluarga ini", "NIK {0} is used by another member"),
    ),
    (
        re.compile(r"^NIK (\d+) is that of a woman .* but jenis_kelamin is L$"),
        (
            "NIK {0} milik perempuan (tanggal lahir + 40), tetapi jenis kelamin Laki-laki",
            "NIK {0} is a woman's (birth day + 40) but sex is Male",
        ),
    ),
    (
        re.compile(r"^NIK (\d+) is that of a man .* but jenis_kelamin is P$"),
        (
            "NIK {0} milik laki-laki, tetapi jenis kelamin Perempuan",
            "NIK {0} is a man's but sex is Female",
        ),
    ),
    (
        re.compile(r"^NIK (\d+) gives birth date (\S+) .* but tanggal_lahir is (\S+)$"),
        (
            "angka 7-12 NIK {0} menunjukkan lahir {1} (HH-BB-TT), tidak cocok dengan tanggal lahir",
            "digits 7-12 of NIK {0} give birth date {1} (DD-MM-YY), not the date of birth",
        ),
    ),
    (
        re.compile(r"^digits 7-\d+ of NIK (\d+) .*$"),
        (
            "angka 7-12 NIK {0} harus tanggal lahir (HHBBTT, hari + 40 untuk perempuan)",
            "digits 7-12 of NIK {0} must be the birth date (DDMMYY, day + 40 for women)",
        ),
    ),
]


_ISO_SHAPE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
SEX_CODES = ("L", "P")


def iso(ms: int | None) -> str | None:
    """Unix milliseconds as an ISO UTC timestamp (for `Text.moment`), or None."""
    if not ms:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


CATALOGUE.update(PHOTO_CATALOGUE)  # node/photo_text.py: the house photo section


class Text:
    """The catalogue in one language: `text("key", name=value)`, dates, messages."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
        self._column = LANGUAGES.index(self.lang)

    def __call__(self, key: str, **values: object) -> str:
        text = CATALOGUE[key][self._column]
        return text.format(**values) if values else text

    def refusal(self, reason: str) -> str:
        """A refusal reason key ('scope', 'chain', …) in words; an unknown key as it is."""
        texts = CATALOGUE.get(f"refusal.{reason}")
        return texts[self._column] if texts else reason

    def label(self, field: str) -> str:
        """A record field's label ("rumah.atap" -> "Atap"), or the name itself."""
        texts = CATALOGUE.get(f"field.{field}")
        return texts[self._column] if texts else field

    def date(self, value: str | date | None) -> str:
        """`21 Maret 1988` (or `21 March 1988`); "" for no date, the text for a bad one."""
        if not value:
            return ""
        try:
            day = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        except ValueError:
            return str(value)
        return f"{day.day} {MONTHS[self.lang][day.month - 1]} {day.year}"

    def typed(self, value: str) -> str:
        """An ISO-shaped date as operators type it (21-03-1988), also an impossible one
        (31-02-1988 stays 31-02-1988); other text unchanged."""
        match = _ISO_SHAPE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            return value
        year, month, day = match.groups()
        return f"{day}-{month}-{year}"

    def moment(self, iso: str | None) -> str:
        """An ISO UTC timestamp in this device's local time: `21 Maret 1988 14.05`."""
        if not iso:
            return self("home.never")
        try:
            when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
        except ValueError:
            return iso
        clock = f"{when:%H.%M}" if self.lang == "id" else f"{when:%H:%M}"
        return f"{self.date(when.date())} {clock}"

    def validation(self, message: str) -> str:
        """A validation message of sync/household.py in this language (the original when
        no pattern matches, so nothing is hidden)."""
        for pattern, texts in _VALIDATION:
            match = pattern.match(message)
            if match:
                shown = [self._shown(group) for group in match.groups()]
                return texts[self._column].format(*shown)
        return message

    def _shown(self, part: str) -> str:
        """A piece of a validation message as the page shows things: dates as typed, the
        sex codes by the words the list uses."""
        if part == ", ".join(SEX_CODES):
            return ", ".join(self(f"sex.{code}") for code in SEX_CODES)
        return self.typed(part)
