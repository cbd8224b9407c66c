//! The command language shared by the control file, `admin` and `control`.
