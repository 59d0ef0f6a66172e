//! Which image agent (and discovery) pods run when no flag says (§12.6 of the contract): the
//! Go manager ran its own image in every mode; here each component has its own image, so the
//! default is the sibling of the manager's image — same registry, repository path and tag,
//! with the component's name in place of `hsm-operator`.

use hsm_api::names::{APP_NAME, components, labels};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};

/// The manager's own image name, whose siblings are the other components'.
const MANAGER_IMAGE_NAME: &str = "hsm-operator";

/// `registry/path/hsm-operator:tag` → `registry/path/<component>:tag` (a digest is dropped:
/// it names the manager's image, not the sibling's). `None` when the manager's image is not
/// named `hsm-operator`.
pub fn sibling_image(manager_image: &str, component: &str) -> Option<String> {
    let without_digest = manager_image.split('@').next()?;
    let (path, tag) = match without_digest.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
        _ => (without_digest, None),
    };
    let (prefix, name) = match path.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, path),
    };
    if name != MANAGER_IMAGE_NAME {
        return None;
    }
    let mut image = match prefix {
        Some(prefix) => format!("{prefix}/{component}"),
        None => component.to_owned(),
    };
    if let Some(tag) = tag {
        image.push(':');
        image.push_str(tag);
    }
    Some(image)
}

/// The image of `component`: `flag` when set; else the sibling of the image of container
/// `manager` in the manager's Deployment (labelled as the Go resolver looks for it); else
/// `<component>:<this release>`.
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    flag: &str,
    component: &str,
) -> String {
    if !flag.trim().is_empty() {
        return flag.trim().to_owned();
    }
    let selector = format!(
        "{}={APP_NAME},{}={}",
        labels::NAME,
        labels::CONTROL_PLANE,
        components::CONTROLLER_MANAGER
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let found = match deployments
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => list
            .items
            .iter()
            .flat_map(|d| d.spec.template.spec.as_ref())
            .flat_map(|spec| &spec.containers)
            .find(|c| c.name == "manager")
            .and_then(|c| c.image.as_deref())
            .and_then(|image| sibling_image(image, component)),
        Err(error) => {
            tracing::warn!(%error, "cannot read the manager's Deployment to choose the {component} image");
            None
        }
    };
    let image = found.unwrap_or_else(|| format!("{component}:{}", env!("CARGO_PKG_VERSION")));
    tracing::info!(%image, "{component} image (no flag given)");
    image
}

#[cfg(test)]
mod tests {
    use super::sibling_image;

    #[test]
    fn the_sibling_keeps_registry_path_and_tag() {
        assert_eq!(
            sibling_image("ghcr.io/acme/hsm-operator:0.2.0", "hsm-agent").as_deref(),
            Some("ghcr.io/acme/hsm-agent:0.2.0")
        );
        assert_eq!(
            sibling_image("localhost:5000/hsm-operator", "hsm-discovery").as_deref(),
            Some("localhost:5000/hsm-discovery")
        );
        assert_eq!(
            sibling_image("hsm-operator:dev", "hsm-agent").as_deref(),
            Some("hsm-agent:dev")
        );
        assert_eq!(
            sibling_image("reg.io/hsm-operator:1@sha256:abcd", "hsm-agent").as_deref(),
            Some("reg.io/hsm-agent:1")
        );
    }

    #[test]
    fn an_image_of_another_name_has_no_sibling() {
        assert_eq!(
            sibling_image(
                "ghcr.io/evanjarrett/hsm-secrets-operator:latest",
                "hsm-agent"
            ),
            None
        );
        assert_eq!(sibling_image("", "hsm-agent"), None);
    }
}
