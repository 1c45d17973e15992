//! AES-256-GCM sealing of what muster keeps outside its memory or hands out: the IdP tokens of a
//! sign-in (`encryptionKey`), exchanged tokens in the shared store, and agent session ids
//! (`aggregator.sessions.keyFile`), so that a store dump or a session id holds nothing usable.
//! Each value gets a fresh 96-bit nonce and is bound to a context (the associated data: a token
//! family, a cache key, "session"), so a sealed value cannot be moved to another context.
//! A `Keyring` seals with its first key and opens with any of them (key rotation).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Sealing failed: a wrong key, a value of another family, or a tampered value.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a sealed value could not be opened")]
pub struct Error;

pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is exactly what AES-256 takes, so this cannot fail.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("AES-256 takes 32 bytes"));
        Self { key: LessSafeKey::new(unbound) }
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Result<Vec<u8>, Error> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(bound_to), &mut sealed)
            .map_err(|_| Error)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], bound_to: &str) -> Result<Vec<u8>, Error> {
        if sealed.len() < NONCE_LEN {
            return Err(Error);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self.key.open_in_place(nonce, Aad::from(bound_to), &mut buffer).map_err(|_| Error)?;
        Ok(plaintext.to_vec())
    }
}

/// Several keys: the first seals, each opens.
pub struct Keyring {
    sealers: Vec<Sealer>,
}

impl Keyring {
    /// A keyring of `keys`, or of one random key of this process when there are none.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        let sealers =
            if keys.is_empty() { vec![Sealer::new(&rand::random())] } else { keys.iter().map(Sealer::new).collect() };
        Self { sealers }
    }

    pub fn seal(&self, plaintext: &[u8], bound_to: &str) -> Result<Vec<u8>, Error> {
        self.sealers.first().ok_or(Error)?.seal(plaintext, bound_to)
    }

    pub fn open(&self, sealed: &[u8], bound_to: &str) -> Result<Vec<u8>, Error> {
        self.sealers.iter().find_map(|sealer| sealer.open(sealed, bound_to).ok()).ok_or(Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_what_it_sealed_for_the_same_family_only() {
        let sealer = Sealer::new(&[7; 32]);
        let sealed = sealer.seal(b"dex refresh token", "family-1").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"refresh"), "ciphertext holds no plaintext");
        assert_eq!(sealer.open(&sealed, "family-1").expect("open"), b"dex refresh token");
        assert!(sealer.open(&sealed, "family-2").is_err(), "bound to its family");
        assert!(Sealer::new(&[8; 32]).open(&sealed, "family-1").is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(sealer.open(&tampered, "family-1").is_err());
        assert_ne!(sealer.seal(b"x", "f").expect("seal"), sealer.seal(b"x", "f").expect("seal"), "fresh nonces");
    }

    #[test]
    fn a_keyring_seals_with_its_first_key_and_opens_with_any() {
        let old = Keyring::new(&[[1; 32]]);
        let rotated = Keyring::new(&[[2; 32], [1; 32]]);
        let sealed_before = old.seal(b"session", "s").expect("seal");
        assert_eq!(rotated.open(&sealed_before, "s").expect("open"), b"session", "the old key still opens");
        let sealed_after = rotated.seal(b"session", "s").expect("seal");
        assert!(old.open(&sealed_after, "s").is_err(), "sealed with the new key");
        assert!(Keyring::new(&[[2; 32]]).open(&sealed_after, "s").is_ok());
    }
}
