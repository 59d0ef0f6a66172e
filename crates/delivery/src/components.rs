//! The images, as a table: one [`Component`] per image.
//!
//! A component names a workspace binary and what else its image holds: files of Debian
//! packages (each with its shared-library closure when it is a program or a library),
//! symbolic links, empty directories, and the user it runs as. The Nix images
//! (`nix/images.nix`) hold the same files from nixpkgs; the file-list snapshots of the image
//! tests are the shared truth for both.

/// Where Debian's multiarch libraries live on this machine.
pub const MULTIARCH: &str = if cfg!(target_arch = "aarch64") {
    "/usr/lib/aarch64-linux-gnu"
} else {
    "/usr/lib/x86_64-linux-gnu"
};

/// A file of a Debian package that goes into an image at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFile {
    /// The Debian package that installs it (named in errors, installed by `cargo xtask deps`).
    pub package: &'static str,
    /// Its path, relative to the multiarch directory when it starts with `{multiarch}/`.
    pub path: &'static str,
    /// Whether it is a program or library whose shared-library closure comes along.
    pub elf: bool,
}

impl HostFile {
    /// The file's absolute path on this machine.
    pub fn resolved(&self) -> String {
        self.path.replace("{multiarch}", MULTIARCH)
    }
}

/// Whether a file is an ELF object whose libraries come along.
const ELF: bool = true;
/// Whether a file is data.
const DATA: bool = false;

const fn file(package: &'static str, path: &'static str, elf: bool) -> HostFile {
    HostFile { package, path, elf }
}

/// One image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// The image's name (`localhost/<name>:<tag>`).
    pub image: &'static str,
    /// The workspace binary target the image runs.
    pub binary: &'static str,
    /// The arguments every run of this image starts with (the Go operator's `--mode`).
    pub mode: &'static str,
    /// Files of Debian packages, with their closures.
    pub files: &'static [HostFile],
    /// Empty directories (mount points and runtime directories for a read-only root).
    pub dirs: &'static [&'static str],
    /// The user and group the image runs as unless the pod says otherwise.
    pub user: u32,
    /// Whether the CCID driver's Info.plist is included, patched to know the Pico HSM.
    pub ccid_info_plist: bool,
    /// Environment of the image (`{multiarch}` is replaced as in [`HostFile::path`]).
    pub env: &'static [(&'static str, &'static str)],
}

impl Component {
    /// The image's environment with paths resolved for this machine.
    pub fn resolved_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.replace("{multiarch}", MULTIARCH)))
            .collect()
    }
}

/// The non-root user of the operator's images (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;

/// CA certificates, for the images that talk to the Kubernetes API and other TLS servers.
const CA_CERTIFICATES: HostFile = file(
    "ca-certificates",
    "/etc/ssl/certs/ca-certificates.crt",
    DATA,
);

/// The manager: the binary, CA certificates, and the non-root user.
pub const OPERATOR: Component = Component {
    image: "hsm-operator",
    binary: "hsm-operator",
    mode: "--mode=manager",
    files: &[CA_CERTIFICATES],
    dirs: &["/tmp"],
    user: NONROOT,
    ccid_info_plist: false,
    env: &[],
};

/// Discovery: the binary, CA certificates and the CCID Info.plist (its allowlist of readers).
pub const DISCOVERY: Component = Component {
    image: "hsm-discovery",
    binary: "hsm-discovery",
    mode: "--mode=discovery",
    files: &[CA_CERTIFICATES],
    dirs: &["/tmp"],
    user: NONROOT,
    ccid_info_plist: true,
    env: &[],
};

/// The agent: the binary, OpenSC's PKCS#11 module, its SmartCard-HSM profiles and
/// `sc-hsm-tool`, pcscd and the CCID driver bundle, with the directories pcscd writes to
/// ready as mount points for a read-only root. It runs as root, as the Go agent's pods do (pcscd and the device node), with every
/// capability dropped by the pod.
pub const AGENT: Component = Component {
    image: "hsm-agent",
    binary: "hsm-agent",
    mode: "--mode=agent",
    files: &[
        CA_CERTIFICATES,
        file("opensc-pkcs11", "{multiarch}/opensc-pkcs11.so", ELF),
        file("opensc-pkcs11", "{multiarch}/pkcs11/opensc-pkcs11.so", ELF),
        file("opensc", "/etc/opensc/opensc.conf", DATA),
        file("opensc", "/usr/bin/sc-hsm-tool", ELF),
        // The PKCS#15 profiles OpenSC reads to create an object on a SmartCard-HSM (Pico
        // HSM): without them every C_CreateObject fails with CKR_GENERAL_ERROR.
        file("opensc", "/usr/share/opensc/pkcs15.profile", DATA),
        file("opensc", "/usr/share/opensc/sc-hsm.profile", DATA),
        // OpenSC opens PC/SC with dlopen, so ldd does not see it.
        file("libpcsclite1", "{multiarch}/libpcsclite.so.1", ELF),
        file("pcscd", "/usr/sbin/pcscd", ELF),
        file(
            "libccid",
            "/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Linux/libccid.so",
            ELF,
        ),
    ],
    dirs: &["/tmp", "/run/pcscd", "/var/lock/pcsc", "/etc/hsm/tls"],
    user: 0,
    ccid_info_plist: true,
    // The module the agent loads when the manager passes no --pkcs11-library.
    env: &[("PKCS11_LIBRARY", "{multiarch}/opensc-pkcs11.so")],
};

/// Every image, in build order.
pub const ALL: [Component; 3] = [OPERATOR, AGENT, DISCOVERY];

/// What the agent's test-only layer adds: SoftHSM2, so the agent image answers over a token
/// volume, and pcscd's vpcd reader, so it reaches the e2e tests' virtual Pico HSM. Never part
/// of a shipped image.
pub const TEST_LAYER: &[HostFile] = &[
    file("libsofthsm2", "/usr/lib/softhsm/libsofthsm2.so", ELF),
    file(
        "vsmartcard-vpcd",
        "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
        ELF,
    ),
    file("vsmartcard-vpcd", "/etc/reader.conf.d/vpcd", DATA),
];

/// Where the test layer's SoftHSM2 keeps its tokens: mount the token volume here.
pub const TEST_TOKEN_DIR: &str = "/var/lib/softhsm/tokens";
/// The test layer's SoftHSM2 configuration (keeping tokens in [`TEST_TOKEN_DIR`]): give it
/// to the agent as `SOFTHSM2_CONF`.
pub const TEST_SOFTHSM2_CONF: &str = "/etc/softhsm2.conf";

/// Where the CCID bundle's Info.plist is read (a link to the file Debian keeps in /etc).
pub const CCID_INFO_PLIST: &str = "/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist";
/// Where Debian keeps the CCID Info.plist, and where the patched copy goes in an image.
pub const CCID_INFO_PLIST_ETC: &str = "/etc/libccid_Info.plist";

/// Looks a component up by its image name.
pub fn by_name(name: &str) -> Option<Component> {
    ALL.into_iter().find(|c| c.image == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_unique_and_found() {
        for component in ALL {
            assert_eq!(by_name(component.image), Some(component));
        }
        assert_eq!(by_name("nope"), None);
    }
}
