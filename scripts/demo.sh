#!/usr/bin/env bash
# README command 1: a demo workspace end to end. Installs fuse3 if missing,
# builds circlefs, creates a store with two accounts (alice, bob) and a
# shared circle, mounts it for each, writes and reads files, and shows that
# the store holds only ciphertext. Idempotent: reruns start from scratch.
source "$(dirname "$0")/lib.sh"
need_pkg fusermount3 fuse3
enable_fuse_uring
need_pkg sqlite3 sqlite3
need_pkg xxd xxd
echo "==> building circlefs (release)"
build_release

D=${DEMO_DIR:-/tmp/circlefs-demo}
for m in "$D/alice" "$D/bob"; do unmount_quiet "$m"; done
rm -rf "$D"
mkdir -p "$D/alice" "$D/bob" "$D/secrets"
chmod 700 "$D/secrets"
printf 'admin-demo-passphrase\n' > "$D/secrets/admin"
printf 'alice-demo-passphrase\n' > "$D/secrets/alice"
printf 'bob-demo-passphrase\n' > "$D/secrets/bob"
S="$D/store"
admin() { "$BIN" admin "$S" --user admin --passphrase-file "$D/secrets/admin" "$@"; }
run() { echo "\$ $*" | sed "s#$BIN#circlefs#"; "$@"; }

echo; echo "==> create the store (demo uses the fast KDF; real stores use Argon2id 64 MiB, t=3, p=4)"
run "$BIN" init "$S" --kdf fast --new-passphrase-file "$D/secrets/admin"
run admin user create alice --new-passphrase-file "$D/secrets/alice" --given-name Alice --email alice@example.org
run admin user create bob --new-passphrase-file "$D/secrets/bob" --given-name Bob
run "$BIN" admin "$S" --user alice --passphrase-file "$D/secrets/alice" circle create "Team Docs"

echo; echo "==> mount for alice and use the control file"
run "$BIN" mount "$S" "$D/alice" --user alice --passphrase-file "$D/secrets/alice"
wait_mounted "$D/alice"
run "$BIN" control "$D/alice" trustee add "Team Docs" bob --level read
run "$BIN" control "$D/alice" circle info "Team Docs"

echo; echo "==> alice writes files"
echo "Quarterly plan: ship circlefs. SECRET-DEMO-CONTENT" > "$D/alice/Team Docs/plan.txt"
mkdir -p "$D/alice/Team Docs/reports"
head -c 1000000 /dev/urandom > "$D/alice/Team Docs/reports/data.bin"
run ls -la "$D/alice" "$D/alice/Team Docs" "$D/alice/Team Docs/reports"
run cat "$D/alice/Team Docs/plan.txt"

echo; echo "==> bob mounts his own view (read trustee)"
run "$BIN" mount "$S" "$D/bob" --user bob --passphrase-file "$D/secrets/bob"
wait_mounted "$D/bob"
run cat "$D/bob/Team Docs/plan.txt"
cmp "$D/alice/Team Docs/reports/data.bin" "$D/bob/Team Docs/reports/data.bin" && echo "bob reads the same 1 MB alice wrote"
echo "\$ echo change > '$D/bob/Team Docs/plan.txt'"
if (echo change > "$D/bob/Team Docs/plan.txt") 2>/dev/null; then echo "UNEXPECTED: bob could write"; exit 1; else echo "refused: bob has level read (EACCES)"; fi

echo; echo "==> what the store holds (ciphertext only)"
run ls -lR "$S"
echo "\$ sqlite3 $S/circlefs.db 'SELECT name, given_name FROM accounts'   # account names are clear by design"
sqlite3 "$S/circlefs.db" 'SELECT name, given_name FROM accounts'
echo "\$ sqlite3 $S/circlefs.db 'SELECT hex(name_ct) FROM dirents LIMIT 3'   # file names are sealed"
sqlite3 "$S/circlefs.db" 'SELECT substr(hex(name_ct),1,64) FROM dirents LIMIT 3'
blk=$(ls -S "$S"/blocks/*/* | tail -1)
echo "\$ xxd -l 64 $blk   # block 0's entry: half 0 = keygen, nonce, tag; half 1 empty"
xxd -l 64 "$blk"
echo "\$ xxd -s 16384 -l 64 $blk   # block 0's page (after the 4 header pages): ciphertext"
xxd -s 16384 -l 64 "$blk"
for m in "SECRET-DEMO-CONTENT" "plan.txt" "Team Docs" "reports" "alice-demo-passphrase"; do
  if grep -rqa -- "$m" "$S"; then echo "FOUND plaintext '$m' in the store"; exit 1; else echo "not in the store: '$m'"; fi
done

echo; echo "==> alice removes bob: a new key epoch; bob's running mount loses the circle"
run "$BIN" control "$D/alice" trustee remove "Team Docs" bob
sleep 1
run ls -la "$D/bob"
echo "After the removal" > "$D/alice/Team Docs/after-removal.txt"
echo "(alice wrote after-removal.txt under the new epoch; no key bob ever held opens it)"
run "$BIN" control "$D/alice" circle info "Team Docs"

echo; echo "==> done. The mounts stay up:"
echo "    alice: $D/alice    bob: $D/bob"
echo "Unmount with:  $BIN umount $D/alice; $BIN umount $D/bob"
