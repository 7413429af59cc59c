//! Building images from Dockerfiles: the Dockerfile front end (parsing,
//! word expansion, `.dockerignore`). The builder that runs the steps is
//! the Docker API's (`crate::docker::build`), as dockerd's legacy builder
//! is part of dockerd.

pub mod dockerfile;
