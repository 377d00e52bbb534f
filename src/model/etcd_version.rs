//! An etcd release (`3.5.30`) and how it is read from what etcd or an image tag says. The flags
//! etcd takes and the release steps it allows depend on it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EtcdVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl EtcdVersion {
    pub(crate) const fn new(major: u32, minor: u32, patch: u32) -> Self {
        EtcdVersion {
            major,
            minor,
            patch,
        }
    }

    /// `3.5.30` (also `v3.5.30`, `3.5.15-0`: what follows the patch's digits is ignored).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().trim_start_matches('v').splitn(3, '.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        Some(EtcdVersion::new(
            parts.next()??,
            parts.next()??,
            parts.next()??,
        ))
    }

    /// From `etcd --version`'s output ("etcd Version: 3.5.30").
    pub(crate) fn from_version_output(out: &str) -> Option<Self> {
        out.lines()
            .find_map(|l| l.strip_prefix("etcd Version: "))
            .and_then(EtcdVersion::parse)
    }

    /// From an image tag such as `registry.k8s.io/etcd:3.5.15-0` or `quay.io/coreos/etcd:v3.5.30`;
    /// None for a digest only or a tag like `latest`.
    pub(crate) fn from_image(image: &str) -> Option<Self> {
        let image = image.split('@').next()?;
        let last = image.rsplit('/').next()?;
        EtcdVersion::parse(last.split_once(':')?.1)
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_output_tags_and_text() {
        let v = EtcdVersion::new;
        assert_eq!(
            EtcdVersion::from_version_output(
                "etcd Version: 3.5.30\nGit SHA: abc\nGo Version: go1.23\n"
            ),
            Some(v(3, 5, 30))
        );
        assert_eq!(EtcdVersion::from_version_output("etcd 3.5.30"), None);
        for (image, want) in [
            ("registry.k8s.io/etcd:3.5.15-0", Some(v(3, 5, 15))),
            ("quay.io/coreos/etcd:v3.5.30", Some(v(3, 5, 30))),
            ("localhost:5000/etcd:3.4.23", Some(v(3, 4, 23))),
            ("localhost:5000/etcd", None),
            ("etcd:latest", None),
            ("etcd@sha256:0123", None),
            ("etcd:3.5", None),
        ] {
            assert_eq!(EtcdVersion::from_image(image), want, "{image}");
        }
        assert!(v(3, 5, 5) > v(3, 4, 23) && v(3, 6, 0) > v(3, 5, 30));
        assert_eq!(v(3, 6, 1).to_string(), "3.6.1");
    }
}
