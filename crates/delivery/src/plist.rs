//! The CCID driver's `Info.plist`, taught the Pico HSM.
//!
//! pcscd matches a USB reader against the parallel arrays `ifdVendorID`, `ifdProductID` and
//! `ifdFriendlyName` of the CCID bundle's Info.plist, and discovery reads the same arrays as
//! its allowlist. Debian 12's libccid (1.5.2) predates the Pico HSM's current USB id
//! 2e8a:10fd, so the images add it.

use crate::{Error, Result};

/// A reader the image's CCID driver must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    /// USB vendor id, as Info.plist writes it (`0x2E8A`).
    pub vendor: &'static str,
    /// USB product id (`0x10FD`).
    pub product: &'static str,
    /// The name pcscd shows.
    pub name: &'static str,
}

/// The Pico HSM (Raspberry Pi RP2040 firmware by pol-henarejos).
pub const PICO_HSM: Reader = Reader {
    vendor: "0x2E8A",
    product: "0x10FD",
    name: "Pol Henarejos Pico HSM",
};

/// `plist` with `reader` appended to the three arrays, unless it is already listed.
pub fn add_reader(plist: &str, reader: Reader) -> Result<String> {
    if knows(plist, reader)? {
        return Ok(plist.to_owned());
    }
    let mut out = plist.to_owned();
    for (key, value) in [
        ("ifdVendorID", reader.vendor),
        ("ifdProductID", reader.product),
        ("ifdFriendlyName", reader.name),
    ] {
        let (_, end) = array_bounds(&out, key)?;
        out.insert_str(end, &format!("\t<string>{value}</string>\n\t"));
    }
    Ok(out)
}

/// Whether `plist` lists `reader` (the same index in the vendor and product arrays).
pub fn knows(plist: &str, reader: Reader) -> Result<bool> {
    let vendors = strings(plist, "ifdVendorID")?;
    let products = strings(plist, "ifdProductID")?;
    Ok(vendors.iter().zip(&products).any(|(v, p)| {
        v.eq_ignore_ascii_case(reader.vendor) && p.eq_ignore_ascii_case(reader.product)
    }))
}

/// The `<string>`s of the array under `key`.
pub fn strings(plist: &str, key: &'static str) -> Result<Vec<String>> {
    let (start, end) = array_bounds(plist, key)?;
    Ok(plist[start..end]
        .split("<string>")
        .skip(1)
        .filter_map(|s| s.split_once("</string>").map(|(v, _)| v.trim().to_owned()))
        .collect())
}

/// Byte range of the inside of the `<array>` that follows `<key>key</key>`: from after
/// `<array>` to the start of `</array>`.
fn array_bounds(plist: &str, key: &'static str) -> Result<(usize, usize)> {
    let key_end = plist
        .find(&format!("<key>{key}</key>"))
        .ok_or(Error::Plist(key))?;
    let open = key_end + plist[key_end..].find("<array>").ok_or(Error::Plist(key))?;
    let inside = open + "<array>".len();
    let close = inside + plist[inside..].find("</array>").ok_or(Error::Plist(key))?;
    Ok((inside, close))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "<dict>\n\t<key>ifdVendorID</key>\n\t<array>\n\t\t<string>0x04E6</string>\n\t</array>\n\
        \t<key>ifdProductID</key>\n\t<array>\n\t\t<string>0x5816</string>\n\t</array>\n\
        \t<key>ifdFriendlyName</key>\n\t<array>\n\t\t<string>SmartCard-HSM</string>\n\t</array>\n</dict>\n";

    #[test]
    fn appends_the_pico_hsm_to_the_three_parallel_arrays() {
        let patched = add_reader(SMALL, PICO_HSM).unwrap();
        assert_eq!(
            strings(&patched, "ifdVendorID").unwrap(),
            ["0x04E6", "0x2E8A"]
        );
        assert_eq!(
            strings(&patched, "ifdProductID").unwrap(),
            ["0x5816", "0x10FD"]
        );
        assert_eq!(
            strings(&patched, "ifdFriendlyName").unwrap(),
            ["SmartCard-HSM", PICO_HSM.name]
        );
        assert!(knows(&patched, PICO_HSM).unwrap());
        assert!(!knows(SMALL, PICO_HSM).unwrap());
    }

    #[test]
    fn patching_twice_changes_nothing() {
        let once = add_reader(SMALL, PICO_HSM).unwrap();
        assert_eq!(add_reader(&once, PICO_HSM).unwrap(), once);
    }

    #[test]
    fn a_plist_without_the_arrays_is_refused() {
        assert!(matches!(
            add_reader("<dict></dict>", PICO_HSM),
            Err(Error::Plist("ifdVendorID"))
        ));
    }

    #[test]
    fn debians_plist_lacks_the_pico_hsm_and_gets_it_at_the_same_index() {
        let Ok(plist) = std::fs::read_to_string(crate::components::CCID_INFO_PLIST_ETC) else {
            panic!("libccid is not installed: run `cargo xtask deps`");
        };
        let patched = add_reader(&plist, PICO_HSM).unwrap();
        let vendors = strings(&patched, "ifdVendorID").unwrap();
        let products = strings(&patched, "ifdProductID").unwrap();
        let names = strings(&patched, "ifdFriendlyName").unwrap();
        assert_eq!(vendors.len(), products.len());
        assert_eq!(vendors.len(), names.len());
        assert!(knows(&patched, PICO_HSM).unwrap());
        assert_eq!(vendors.last().unwrap(), PICO_HSM.vendor);
    }
}
